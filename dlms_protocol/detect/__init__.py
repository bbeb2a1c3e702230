"""Find out what a meter on a port speaks: protocol, speed, character format, encryption.

``decoders`` holds one stream decoder per protocol behind one interface plus ``AutoDecoder``
(the plugin's and ``listen``'s ``protocol: auto``); ``probe`` listens and signs on in a safe
order within a bounded time; ``report`` turns a finding into a ``plugin.yaml`` block and items;
``diagnose`` explains bytes nobody could read (the plugin logs it).
"""
