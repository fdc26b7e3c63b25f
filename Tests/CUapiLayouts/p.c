int placeholder_CUapiLayouts(void){return 0;}
