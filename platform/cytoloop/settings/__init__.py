"""Layered settings: base (shared), local (embedded defaults), test, production."""
