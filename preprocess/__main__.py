from preprocess.prepare import main

raise SystemExit(main())
