from stellardb.cli.main import main

main()
