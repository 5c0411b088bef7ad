"""The ResNeSt crop classifier: data, config, trainer, evaluation (over ``training.loop``)."""
