"""Model and dataset card templates (jinja2), rendered by :mod:`timm_uscl.cards`."""
