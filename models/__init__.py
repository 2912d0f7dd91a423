"""Structure predictors behind one small protocol (see `protocol.py`); `types.py` holds shared records."""
