print("vio-fwd: not built yet")
