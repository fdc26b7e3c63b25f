int placeholder_CAllocCounter(void){return 0;}
