"""The Switchboard domain: channels, events, stores, brokers and fan-out.

Nothing in this package imports aiohttp or socketio: transports live in
``server/`` and ``handlers/`` and reach the domain through ``ChannelService``.
"""
