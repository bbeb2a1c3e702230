"""MQTT output with Home Assistant discovery (``pipeline.OUTPUTS["mqtt"]``); needs paho-mqtt.

Imported only when MQTT is configured, so readers without MQTT never load paho.
"""
