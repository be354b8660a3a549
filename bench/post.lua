-- wrk script for `make bench`: the same POST on every request.
-- Arguments after `--`: a file holding the body, then `name: value` header lines.
-- With UMG_BENCH_CHECK=1 in the environment it also reads every answer and reports at
-- the end how many were complete SSE streams (their body ends with `data: [DONE]`).
local request_bytes
local threads = {}
answers, complete = 0, 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local headers = { ["Content-Type"] = "application/json" }
  for i = 2, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  request_bytes = wrk.format("POST", nil, headers, body)
end

function request()
  return request_bytes
end

if os.getenv("UMG_BENCH_CHECK") == "1" then
  function response(status, headers, body)
    answers = answers + 1
    if status == 200 and body:find("data: %[DONE%]%s*$") then
      complete = complete + 1
    end
  end

  function done(summary, latency, requests)
    local a, c = 0, 0
    for _, thread in ipairs(threads) do
      a = a + thread:get("answers")
      c = c + thread:get("complete")
    end
    io.write(string.format("answers checked: %d complete: %d\n", a, c))
  end
end
