"""The trainer's ``timm-uscl`` subcommands (``pretrain``, ``evaluate``, ``publish-dataset``, ``reproduce``).

Each module has ``register(subparsers)`` and imports only argparse and light config modules at import time, so the
plugin's command line can list them without the ``train`` extra; the handler imports the trainer when it runs.
"""
