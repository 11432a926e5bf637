from zonda.cli import main

if __name__ == "__main__":  # not when the spawn start method imports this module anew
    main()
