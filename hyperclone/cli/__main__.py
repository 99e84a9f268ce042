from hyperclone.cli import main

main()
