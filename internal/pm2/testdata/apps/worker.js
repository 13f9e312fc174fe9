// A queue consumer: no port.
setInterval(() => {}, 1000);
