"""A fast local upstream for benchmarks: the test suite's fake provider in its own process.

`python -m bench.upstream` prints the base URL on its first line of stdout and serves
the OpenAI and Anthropic wire formats until killed (see tests/fakes for the answers).
"""

from __future__ import annotations

import trio

from tests.fakes import running_fake_provider


async def main() -> None:
    async with running_fake_provider() as fake:
        print(fake.base_url, flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
