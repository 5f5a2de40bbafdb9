/* control.h — the local control socket (<data_dir>/petreld.sock, mode 0600)
 * that petrelctl uses while the server runs. One command per connection, one
 * line; the answer is lines of text ending with "ok" or "error: ...". */
#ifndef PT_CONTROL_H
#define PT_CONTROL_H

struct server;

int  control_open(struct server *srv);
void control_close(struct server *srv);
/* path of the socket for a data folder */
int  control_path(const char *data_dir, char *out, unsigned outlen);

#endif
