"""Database layer: declarative base, models, engine/session factories and migrations."""
