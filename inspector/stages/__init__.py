"""The data path, one module per stage: capture -> trigger -> crop -> batch -> score -> decide -> encode.

frontend.py is capture -> trigger -> crop as one piece, shared by the pipeline and `inspector collect`.
"""
