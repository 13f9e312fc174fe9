// What `pm2 init simple` writes (lib/templates/ecosystem-simple.tpl).
module.exports = {
  apps : [{
    name   : "app1",
    script : "./server.js"
  }]
}
