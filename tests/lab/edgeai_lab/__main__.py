from edgeai_lab.cli import main

raise SystemExit(main())
