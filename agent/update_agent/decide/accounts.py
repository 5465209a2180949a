"""Pure: merge the node's account databases with the image's.

/etc/passwd, group, shadow and gshadow are not copied: the merged file takes
the image's entries and keeps the ones the node added (users created on the
node after deployment). Group memberships the node added to an image group are
kept too. With the previous image's file as the base (a three-way merge), an
entry the new image dropped is dropped, not mistaken for one the node added.
A clash of names or numeric ids is refused: files on the node's state are
owned by those ids.
"""

from update_agent.errors import AgentError

FILES = ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")
ID_FIELD = {"etc/passwd": 2, "etc/group": 2}
MEMBER_FIELD = {"etc/group": 3, "etc/gshadow": 3}


class AccountClash(AgentError):
    pass


def _parse(text):
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        rows.append(line.split(":"))
    return rows


def _merge_members(image_row, node_row, field):
    if len(image_row) <= field or len(node_row) <= field:
        return image_row
    members = [m for m in image_row[field].split(",") if m]
    members += [m for m in node_row[field].split(",") if m and m not in members]
    row = list(image_row)
    row[field] = ",".join(members)
    return row


def merge(rel, node_text, image_text, base_text=None):
    """Return the merged file content for one account database.

    base_text: the same file in the image the node ran (None if unknown).
    """
    image_rows, node_rows = _parse(image_text), _parse(node_text)
    base_names = {r[0] for r in _parse(base_text)} if base_text is not None else set()
    by_name = {r[0]: r for r in image_rows}
    id_field = ID_FIELD.get(rel)
    ids = {r[id_field]: r[0] for r in image_rows if id_field is not None and len(r) > id_field}
    node_by_name = {r[0]: r for r in node_rows}
    out = []
    for row in image_rows:
        node_row = node_by_name.get(row[0])
        if node_row is not None and id_field is not None and len(node_row) > id_field \
                and len(row) > id_field and node_row[id_field] != row[id_field]:
            raise AccountClash("/%s: %r has id %s on the node but %s in the image"
                               % (rel, row[0], node_row[id_field], row[id_field]))
        if node_row is not None and rel in MEMBER_FIELD:
            row = _merge_members(row, node_row, MEMBER_FIELD[rel])
        out.append(row)
    for row in node_rows:
        if row[0] in by_name or row[0] in base_names:
            continue  # the image's own entry, or one the new image dropped
        if id_field is not None and len(row) > id_field and row[id_field] in ids:
            raise AccountClash("/%s: node's %r and image's %r both use id %s"
                               % (rel, row[0], ids[row[id_field]], row[id_field]))
        out.append(row)
    return "".join(":".join(r) + "\n" for r in out)
