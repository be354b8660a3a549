"""Settings: the TOML config file, then the environment, then command-line flags.

Owns: nothing itself; the package is where configuration is read, one module a section
(`limits.py`, `jobs.py`, `webhooks.py`, `metrics.py`, `tracing.py`, `policies.py`,
`budgets.py`, `providers.py`), the frozen `Settings` value that holds them
(`settings.py`), the parsing rules they share (`values.py`) and `load_settings`, which
puts them together (`loader.py`). Precedence, lowest first: built-in defaults < the TOML
file (`--config` or `UMG_CONFIG`) < environment variables < command-line flags. Nothing
else in the gateway reads the environment.
"""
