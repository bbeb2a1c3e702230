"""SML (Smart Message Language, German optical INFO interface) on smllib: framing, decoding, source.

``framing`` cuts the stream and checks CRCs (no smllib), ``decoder`` turns verified
transmissions into readings through smllib, ``source`` is the pipeline ``Source``/listener.
"""
