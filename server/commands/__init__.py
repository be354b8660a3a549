"""The `umg` command's command groups, one module each (server/cli.py parses and
dispatches): `serve`, `worker`, `keys`, `budgets`, `webhooks`, `prune`. Each module
adds its subcommand's flags to the parser (`add_parser(sub, parents)`) and runs it
(`main(args, settings) -> exit status`); `common` holds what they share (the flag
types, the storage they open, how a list is printed)."""
