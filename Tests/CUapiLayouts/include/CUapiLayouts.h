int placeholder_CUapiLayouts(void);
