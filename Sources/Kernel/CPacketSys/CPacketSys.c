#include "CPacketSys.h"
