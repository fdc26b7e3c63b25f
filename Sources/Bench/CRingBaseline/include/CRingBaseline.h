int placeholder_CRingBaseline(void);
