from patterson.cli import main

raise SystemExit(main())
