"""SmartHomeNG plugin ``dlms`` (placeholder until the plugin issue lands; see dlms_protocol/)."""
