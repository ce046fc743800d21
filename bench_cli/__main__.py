from bench_cli.cli import console

console()
