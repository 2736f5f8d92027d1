-- now: the server's clock
return fmt(now())
