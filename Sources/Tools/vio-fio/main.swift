print("vio-fio: not built yet")
