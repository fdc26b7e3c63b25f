int placeholder_CAllocCounter(void);
