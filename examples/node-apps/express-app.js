// An Express 5 app as its docs and PM2's show it.
'use strict';
const express = require('express');

const app = express();
const port = process.env.PORT || 3000;

app.all('/', (req, res) => {
  res.send(`hello from pid=${process.pid}\n`);
});

const server = app.listen(port, () => {
  console.log(`Example app listening on port ${port}`);
  if (process.send) process.send('ready');
});

process.on('SIGINT', () => {
  server.close(() => process.exit(0));
});
