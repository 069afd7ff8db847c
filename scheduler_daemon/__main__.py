from scheduler_daemon.operation.cli import main

raise SystemExit(main())
