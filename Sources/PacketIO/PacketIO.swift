// placeholder: replaced by the PacketIO API
