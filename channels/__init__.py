"""The Switchboard domain: channels, events, stores, brokers and fan-out.

Nothing in this package imports aiohttp or socketio: transports live in
``server/`` and ``handlers/``. Handlers call the use cases through
``ChannelService`` (and the cross-instance ``ControlBus``); the REST health
checks ping the ports directly; ``server/`` builds and wires the parts and
implements the ``Delivery`` port the fan-out hands events to.
"""
