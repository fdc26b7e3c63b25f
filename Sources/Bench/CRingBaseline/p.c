int placeholder_CRingBaseline(void){return 0;}
