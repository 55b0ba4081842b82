"""The bundled Meta-USCL trainer (installed as ``timm_uscl.training``; needs the ``train`` extra)."""
