"""One module per `picket` subcommand: argument wiring and exit codes, no semantics."""
