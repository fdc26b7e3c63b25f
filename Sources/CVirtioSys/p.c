int placeholder_CVirtioSys(void){return 0;}
