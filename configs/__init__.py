"""Preset training configurations (YAML), resolved by :mod:`timm_uscl.training.config`."""
