from train.train import main

raise SystemExit(main())
