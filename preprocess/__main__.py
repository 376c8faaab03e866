from preprocess import cli
from preprocess.prepare import main

cli.run(main)
