from fmprobe.cli import main

main()
