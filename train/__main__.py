from preprocess import cli
from train.train import main

cli.run(main)
