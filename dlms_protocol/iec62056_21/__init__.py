"""IEC 62056-21 (D0) optical readout: sans-io protocol, data-block parser, client."""
