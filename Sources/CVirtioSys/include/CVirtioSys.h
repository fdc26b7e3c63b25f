int placeholder_CVirtioSys(void);
