import sys

from torchclip.cli import main

sys.exit(main())
