from zonda.cli import main

main()
