"""Thin transport adapters: validate (pydantic), call channels/, map results and errors."""
