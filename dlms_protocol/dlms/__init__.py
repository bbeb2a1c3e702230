"""DLMS/COSEM push: deframing (HDLC, M-Bus, wrapper), GBT, AES-GCM, APDU decoding, profiles."""
