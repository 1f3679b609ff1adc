from mpk.cli import run

run()
