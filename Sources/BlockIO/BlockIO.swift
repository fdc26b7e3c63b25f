// placeholder: replaced by the BlockIO API
