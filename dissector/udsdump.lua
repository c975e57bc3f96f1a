-- udsdump.lua — labels udsdump captures with the processes and the socket behind every endpoint.
--
-- udsdump writes what it relays on a Unix socket as synthetic Ethernet/IPv4/TCP (UDP for datagram
-- sockets) between made-up addresses, so Wireshark's own dissectors decode the payload (HTTP for
-- docker.sock...).  Who the endpoints really are travels in metadata frames (EtherType 0x88B5, magic
-- "UDSD", then TLVs; docs/capture-format.md), written before the frames they describe.  This plugin:
--
--  * dissects the metadata frames (every header field and TLV named), Protocol column "UNIX";
--  * remembers each connection's OPEN frame, keyed by its 4-tuple (client ip/port, server ip/port);
--  * once a capture shows it is udsdump's (a metadata frame), wraps Wireshark's IPv4 dissector: after
--    IPv4/TCP/HTTP... have dissected a frame of a known connection, adds a "Unix Domain Socket" tree of
--    generated fields (unix.pid, unix.comm, unix.path, ...) and shows comm[pid] and the socket path in
--    Source/Destination, the sender in Source; Protocol and Info stay those of the real protocol.
--
-- The field names are the user-facing filter API, documented in docs/dissector.md: keep them stable.
--
-- Invariants and the reasons for them:
--  * State is filled only while a frame is dissected for the first time (not pinfo.visited) and reset
--    in unix.init: the same frame is dissected again and again in the GUI, in any order, and must look
--    the same each time.  There is no conversation API in Lua, so connections are plain tables keyed by
--    what the frames carry.  A 4-tuple may in theory come back (merged captures), so each key holds its
--    connections in order of their OPEN frame and a frame belongs to the latest one opened before it.
--  * Metadata comes before the traffic it describes, so one pass (tshark -i, tshark -r without -2)
--    labels everything that a two-pass read does, except what is only known later ("closed in frame").
--  * Anything that is not a udsdump capture must go through untouched and without a Lua error: the
--    EtherType is an experimental one other tools use too (no "UDSD" magic: not ours, return 0), the
--    IPv4 wrapper is installed only after a valid metadata frame and removed when a file is closed,
--    and metadata and headers are bounds-checked before every read (a bad TLV is marked malformed,
--    never trusted).
--  * Traffic frames are matched by the 4-tuple read from their own IPv4/TCP|UDP headers, the
--    encapsulation the format fixes, not through Field.new extractors: those only see fields when a
--    tree is built, and a first pass (tshark -2) builds none, so connections would go unlabelled.
--  * One Proto serves both EtherTypes it is registered for (pinfo.match_uint tells which): 0x88B5, the
--    metadata, and 0x0800 once wrapped, where it calls the IPv4 dissector first and labels after it.
--  * Source/Destination: Wireshark renders those columns from pinfo.src/dst, overwriting any text a
--    dissector set, unless the address is of type NONE; since 4.2 the column fields (_ws.col.def_src,
--    used by -T fields, filters and custom columns) are rendered right after the dissector chain, before
--    any postdissector runs.  So the labels are set inside the chain, by the wrapper, right after IPv4
--    and its payload are done: pinfo.src/dst become an address of type NONE (Lua can construct none; the
--    network address of a frame is still NONE when the EtherType dispatches, so that one is kept), and
--    pinfo.cols.src/dst the labels.  The same on 4.0 to 4.6.  pinfo.net_src/net_dst keep the synthetic
--    IPs (the "Network src/dest addr" columns and conversation filters still work).
--  * Runs on Lua 5.2 (Wireshark 4.0, 4.2) and 5.4 (4.4+): no bit32, unpack, loadstring or setfenv;
--    integers stay integers (no "/" where a whole number is meant: math.floor, or %).
--  * Loaded twice (a global copy from `meson install` and a personal one from scripts/install-personal),
--    the second copy steps aside instead of failing on Proto("unix") (UDSDUMP_DISSECTOR, a deliberate
--    global).

local PLUGIN_VERSION = "0.1.0"

if rawget(_G, "UDSDUMP_DISSECTOR") then
    return  -- another copy is loaded already (see the invariants)
end
rawset(_G, "UDSDUMP_DISSECTOR", PLUGIN_VERSION)

if set_plugin_info then
    set_plugin_info({
        version = PLUGIN_VERSION,
        description = "Unix Domain Socket: labels udsdump captures with processes and socket paths",
        repository = "udsdump",
    })
end

local unix = Proto("unix", "Unix Domain Socket")

local ETHERTYPE_UDSD = 0x88b5
local ETHERTYPE_IPV4 = 0x0800
local ethertype_table = DissectorTable.get("ethertype")
local ipv4 = ethertype_table:get_dissector(ETHERTYPE_IPV4)  -- Wireshark's own, wrapped while labelling
local HEADER_LEN = 24
local FORMAT_VERSION = 1

local EV_OPEN, EV_CLOSE, EV_DROP, EV_ANCILLARY, EV_INFO, EV_SENDER = 1, 2, 3, 4, 5, 6
local DIR_C2S, DIR_S2C, DIR_NONE = 0, 1, 255

local EVENT_NAMES = { [1] = "OPEN", [2] = "CLOSE", [3] = "DROP", [4] = "ANCILLARY", [5] = "INFO", [6] = "SENDER" }
local DIR_NAMES = { [0] = "client->server", [1] = "server->client", [255] = "none" }
local SOCK_TYPES = { [1] = "stream", [2] = "dgram", [5] = "seqpacket" }

-- TLV types, and the sizes of the fixed-size ones (checked)
local T = {
    PATH = 1, SOCK_TYPE = 2, CLIENT_PID = 3, CLIENT_UID = 4, CLIENT_GID = 5, CLIENT_COMM = 6,
    SERVER_PID = 7, SERVER_COMM = 8, PROTO = 9, DROPPED_BYTES = 10, FD_COUNT = 11, FD_DESC = 12,
    CRED_PID = 13, CRED_UID = 14, CRED_GID = 15, CTRUNC = 16, CLIENT_ADDR = 17, CLIENT_GROUPS = 18,
    VERSION = 19, CAPTURE_START = 20,
    SENDER_PID = 21, SENDER_UID = 22, SENDER_GID = 23, SENDER_COMM = 24, SOURCE = 25,
}
local TLV_NAMES = {
    [1] = "Socket path", [2] = "Socket type", [3] = "Client PID", [4] = "Client UID", [5] = "Client GID",
    [6] = "Client command", [7] = "Server PID", [8] = "Server command", [9] = "Protocol",
    [10] = "Dropped bytes", [11] = "Descriptor count", [12] = "Descriptor", [13] = "Credentials PID",
    [14] = "Credentials UID", [15] = "Credentials GID", [16] = "Control data truncated",
    [17] = "Client address", [18] = "Client groups", [19] = "udsdump version", [20] = "Capture start",
    [21] = "Sender PID", [22] = "Sender UID", [23] = "Sender GID", [24] = "Sender command", [25] = "Source",
}
local TLV_SIZE = {
    [2] = 1, [3] = 4, [4] = 4, [5] = 4, [7] = 4, [10] = 8, [11] = 4, [13] = 4, [14] = 4, [15] = 4,
    [16] = 1, [20] = 8, [21] = 4, [22] = 4, [23] = 4,
}

-- Fields: the filter API (docs/dissector.md)
local F = {
    path = ProtoField.string("unix.path", "Socket path", base.UNICODE),
    type = ProtoField.uint8("unix.type", "Socket type", base.DEC, SOCK_TYPES),
    conn = ProtoField.uint32("unix.conn", "Connection", base.DEC),
    direction = ProtoField.string("unix.direction", "Direction"),
    pid = ProtoField.uint32("unix.pid", "Client PID", base.DEC),
    uid = ProtoField.uint32("unix.uid", "Client UID", base.DEC),
    gid = ProtoField.uint32("unix.gid", "Client GID", base.DEC),
    groups = ProtoField.uint32("unix.groups", "Client group", base.DEC),
    comm = ProtoField.string("unix.comm", "Client command", base.UNICODE),
    client_addr = ProtoField.string("unix.client_addr", "Client address", base.UNICODE),
    server_pid = ProtoField.uint32("unix.server.pid", "Server PID", base.DEC),
    server_comm = ProtoField.string("unix.server.comm", "Server command", base.UNICODE),
    proto = ProtoField.string("unix.proto", "Protocol"),
    open_frame = ProtoField.framenum("unix.open_frame", "Connection opened in frame", base.NONE),
    close_frame = ProtoField.framenum("unix.close_frame", "Connection closed in frame", base.NONE),
    ancillary = ProtoField.framenum("unix.ancillary_frame", "Ancillary data described in frame", base.NONE),
    fds = ProtoField.uint32("unix.fds", "Descriptors passed", base.DEC),
    fd_desc = ProtoField.string("unix.fd_desc", "Descriptor", base.UNICODE),
    cred_pid = ProtoField.uint32("unix.cred.pid", "Credentials PID", base.DEC),
    cred_uid = ProtoField.uint32("unix.cred.uid", "Credentials UID", base.DEC),
    cred_gid = ProtoField.uint32("unix.cred.gid", "Credentials GID", base.DEC),
    ctrunc = ProtoField.bool("unix.ctrunc", "Control data truncated"),
    dropped = ProtoField.uint64("unix.dropped", "Bytes dropped", base.DEC),
    udsdump_version = ProtoField.string("unix.udsdump_version", "udsdump version"),
    capture_start = ProtoField.absolute_time("unix.capture_start", "Capture started", base.UTC),
    -- metadata frame header and TLV framing
    magic = ProtoField.string("unix.meta.magic", "Magic"),
    version = ProtoField.uint8("unix.meta.version", "Format version", base.DEC),
    event = ProtoField.uint8("unix.meta.event", "Event", base.DEC, EVENT_NAMES),
    dir = ProtoField.uint8("unix.meta.dir", "Direction", base.DEC, DIR_NAMES),
    flags = ProtoField.uint8("unix.meta.flags", "Flags", base.HEX),
    client_ip = ProtoField.ipv4("unix.meta.client_ip", "Client address (synthetic)"),
    server_ip = ProtoField.ipv4("unix.meta.server_ip", "Server address (synthetic)"),
    client_port = ProtoField.uint16("unix.meta.client_port", "Client port (synthetic)", base.DEC),
    server_port = ProtoField.uint16("unix.meta.server_port", "Server port (synthetic)", base.DEC),
    tlv = ProtoField.none("unix.meta.tlv", "TLV"),
    tlv_type = ProtoField.uint16("unix.meta.tlv.type", "Type", base.DEC, TLV_NAMES),
    tlv_len = ProtoField.uint16("unix.meta.tlv.len", "Length", base.DEC),
    tlv_value = ProtoField.bytes("unix.meta.tlv.value", "Value"),
    -- observe mode: the process that made each send (SENDER frames), and what produced the capture
    sender_pid = ProtoField.uint32("unix.sender.pid", "Sender PID", base.DEC),
    sender_uid = ProtoField.uint32("unix.sender.uid", "Sender UID", base.DEC),
    sender_gid = ProtoField.uint32("unix.sender.gid", "Sender GID", base.DEC),
    sender_comm = ProtoField.string("unix.sender.comm", "Sender command", base.UNICODE),
    source = ProtoField.string("unix.source", "Capture source"),
}
-- registered in this order (the order Wireshark lists them in)
local FIELD_ORDER = {
    "path", "type", "conn", "direction", "pid", "uid", "gid", "groups", "comm", "client_addr", "server_pid",
    "server_comm", "proto", "open_frame", "close_frame", "ancillary", "fds", "fd_desc", "cred_pid",
    "cred_uid", "cred_gid", "ctrunc", "dropped", "udsdump_version", "capture_start", "magic", "version",
    "event", "dir", "flags", "client_ip", "server_ip", "client_port", "server_port", "tlv", "tlv_type",
    "tlv_len", "tlv_value", "sender_pid", "sender_uid", "sender_gid", "sender_comm", "source",
}
local field_list = {}
for i, name in ipairs(FIELD_ORDER) do
    field_list[i] = assert(F[name], name)
end
unix.fields = field_list

local E = {
    dropped = ProtoExpert.new("unix.expert.dropped", "Capture data dropped (the capture reader was too slow)",
        expert.group.SEQUENCE, expert.severity.WARN),
    fds = ProtoExpert.new("unix.expert.fds", "File descriptors passed",
        expert.group.PROTOCOL, expert.severity.NOTE),
    creds = ProtoExpert.new("unix.expert.creds", "Credentials passed",
        expert.group.PROTOCOL, expert.severity.CHAT),
    ctrunc = ProtoExpert.new("unix.expert.ctrunc", "Control data truncated (descriptors or credentials lost)",
        expert.group.PROTOCOL, expert.severity.WARN),
    malformed = ProtoExpert.new("unix.expert.malformed", "Malformed udsdump metadata",
        expert.group.MALFORMED, expert.severity.ERROR),
    version = ProtoExpert.new("unix.expert.version", "Unknown udsdump metadata version",
        expert.group.UNDECODED, expert.severity.WARN),
}
unix.experts = { E.dropped, E.fds, E.creds, E.ctrunc, E.malformed, E.version }

unix.prefs.columns = Pref.bool("Label Source and Destination", true,
    "Show the client as comm[pid] and the socket path in the Source and Destination columns "
    .. "instead of the synthetic IPv4 addresses")

-- State (see the invariants above)
local conns        -- 4-tuple key -> list of connection records, in order of their OPEN frame
local pending_anc  -- connection record -> { [dir] = ancillary record waiting for its bytes }
local frame_anc    -- data frame number -> ancillary record carried by that frame's bytes
local frag_key     -- "src>dst/ip id" of a fragmented datagram -> its 4-tuple key (from its first fragment)
local cur_sender   -- connection record -> { [dir] = the sender named by its latest SENDER frame }
local frame_sender -- data frame number -> the sender of its bytes
local label_columns = true   -- unix.prefs.columns, read when a file starts and when preferences change
local wrapped = false        -- IPv4 goes through unix.dissector (from the first valid metadata frame)

local function reset_state()
    conns, pending_anc, frame_anc, frag_key = {}, {}, {}, {}
    cur_sender, frame_sender = {}, {}
    label_columns = unix.prefs.columns
    if wrapped then
        ethertype_table:add(ETHERTYPE_IPV4, ipv4)
        wrapped = false
    end
end
reset_state()
unix.init = reset_state    -- a new file, a reload, changed preferences: every frame is dissected anew
function unix.prefs_changed()
    label_columns = unix.prefs.columns
end

local function tuple_key(cip, cport, sip, sport)
    return cip .. ":" .. cport .. ">" .. sip .. ":" .. sport
end

local function find_conn(key, number)
    local list = conns[key]
    if not list then
        return nil
    end
    for i = #list, 1, -1 do
        if list[i].open_frame <= number then
            return list[i]
        end
    end
    return nil
end

local function make_client_label(c)
    local comm = c.comm ~= "" and c.comm or nil
    if comm and c.pid and c.pid > 0 then
        return comm .. "[" .. c.pid .. "]"
    elseif comm then
        return comm
    elseif c.pid and c.pid > 0 then
        return "pid " .. c.pid
    elseif c.client_addr and c.client_addr ~= "" then
        return c.client_addr
    end
    return "client #" .. c.conn
end

local function make_server_label(c)
    if c.path and c.path ~= "" then
        return c.path
    elseif c.server_comm and c.server_comm ~= "" then
        return c.server_comm .. "[" .. (c.server_pid or "?") .. "]"
    end
    return "server #" .. c.conn
end

-- Labels are made once per connection: the wrapper runs for every IPv4 frame.
local function client_label(c)
    local l = c.client_label
    if not l then
        l = make_client_label(c)
        c.client_label = l
    end
    return l
end

local function server_label(c)
    local l = c.server_label
    if not l then
        l = make_server_label(c)
        c.server_label = l
    end
    return l
end

-- Source and Destination, the sender first; none_addr: an address of type NONE (see the invariants)
local function set_endpoint_columns(pinfo, c, dir, none_addr)
    if not label_columns then
        return
    end
    local src, dst = client_label(c), server_label(c)
    if dir == DIR_S2C then
        src, dst = dst, src
    end
    pinfo.src = none_addr
    pinfo.dst = none_addr
    pinfo.cols.src = src
    pinfo.cols.dst = dst
end

local function gen(tree, field, value)
    local item = tree:add(field, value)
    item:set_generated()
    return item
end

-- The labels of a connection, as generated fields (data frames, and events other than OPEN, whose
-- header already carries the connection number: with_conn false)
local function add_conn_labels(tree, c, with_conn)
    if c.path then gen(tree, F.path, c.path) end
    if c.type then gen(tree, F.type, c.type) end
    if with_conn then gen(tree, F.conn, c.conn) end
    if c.pid then gen(tree, F.pid, c.pid) end
    if c.uid then gen(tree, F.uid, c.uid) end
    if c.gid then gen(tree, F.gid, c.gid) end
    if c.groups then
        for _, g in ipairs(c.groups) do
            gen(tree, F.groups, g)
        end
    end
    if c.comm then gen(tree, F.comm, c.comm) end
    if c.client_addr then gen(tree, F.client_addr, c.client_addr) end
    if c.server_pid then gen(tree, F.server_pid, c.server_pid) end
    if c.server_comm then gen(tree, F.server_comm, c.server_comm) end
    if c.proto then gen(tree, F.proto, c.proto) end
    gen(tree, F.open_frame, c.open_frame)
    if c.close_frame then gen(tree, F.close_frame, c.close_frame) end
end

local function add_ancillary_labels(tree, a)
    local st = tree:add(F.ancillary, a.frame)
    st:set_generated()
    st:set_text("Ancillary data: " .. a.summary .. " (described in frame " .. a.frame .. ")")
    if a.fds then gen(st, F.fds, a.fds) end
    for _, d in ipairs(a.fd_desc) do
        gen(st, F.fd_desc, d)
    end
    if a.cred_pid then gen(st, F.cred_pid, a.cred_pid) end
    if a.cred_uid then gen(st, F.cred_uid, a.cred_uid) end
    if a.cred_gid then gen(st, F.cred_gid, a.cred_gid) end
    if a.ctrunc then gen(st, F.ctrunc, true) end
end

local function ancillary_summary(a)
    local parts = {}
    if a.fds then
        parts[#parts + 1] = a.fds .. (a.fds == 1 and " fd" or " fds")
    end
    if a.cred_pid or a.cred_uid or a.cred_gid then
        parts[#parts + 1] = string.format("credentials (pid %s, uid %s, gid %s)",
            tostring(a.cred_pid or "?"), tostring(a.cred_uid or "?"), tostring(a.cred_gid or "?"))
    end
    local s = table.concat(parts, " and ")
    if s ~= "" then
        s = s .. " passed"
    end
    if a.ctrunc then
        s = (s ~= "" and (s .. ", ") or "") .. "control data truncated"
    end
    return s ~= "" and s or "no control data"
end

---------------------------------------------------------------------------------------------------
-- Metadata frames

-- One TLV: adds its subtree and stores its value in v (the frame's decoded values).  FALSE if malformed.
local function dissect_tlv(tvb, pinfo, tree, off, ttype, tlen, v)
    local name = TLV_NAMES[ttype] or ("Unknown TLV " .. ttype)
    local ti = tree:add(F.tlv, tvb(off, 4 + tlen))
    ti:set_text(name)
    ti:add(F.tlv_type, tvb(off, 2))
    ti:add(F.tlv_len, tvb(off + 2, 2))
    local vr = tvb(off + 4, tlen)

    local want = TLV_SIZE[ttype]
    if (want and tlen ~= want) or (ttype == T.CLIENT_GROUPS and tlen % 4 ~= 0) then
        ti:add(F.tlv_value, vr)
        ti:add_proto_expert_info(E.malformed, string.format("%s: length %d, expected %s", name, tlen,
            want and tostring(want) or "a multiple of 4"))
        return false
    end

    local function str(field, key)
        local s = vr:string(ENC_UTF_8)
        ti:add(field, vr, s)
        ti:append_text(": " .. s)
        if key then v[key] = s end
        return s
    end
    local function u32(field, key)
        local n = vr:uint()
        ti:add(field, vr)
        ti:append_text(": " .. n)
        v[key] = n
    end

    if ttype == T.PATH then str(F.path, "path")
    elseif ttype == T.SOCK_TYPE then
        local n = vr:uint()
        ti:add(F.type, vr)
        ti:append_text(": " .. (SOCK_TYPES[n] or tostring(n)))
        v.type = n
    elseif ttype == T.CLIENT_PID then u32(F.pid, "pid")
    elseif ttype == T.CLIENT_UID then u32(F.uid, "uid")
    elseif ttype == T.CLIENT_GID then u32(F.gid, "gid")
    elseif ttype == T.CLIENT_COMM then str(F.comm, "comm")
    elseif ttype == T.SERVER_PID then u32(F.server_pid, "server_pid")
    elseif ttype == T.SERVER_COMM then str(F.server_comm, "server_comm")
    elseif ttype == T.PROTO then str(F.proto, "proto")
    elseif ttype == T.DROPPED_BYTES then
        local n = vr:uint64()
        ti:add(F.dropped, vr)
        ti:append_text(": " .. tostring(n))
        v.dropped = (v.dropped or UInt64(0)) + n
    elseif ttype == T.FD_COUNT then u32(F.fds, "fds")
    elseif ttype == T.FD_DESC then
        local s = str(F.fd_desc)
        v.fd_desc[#v.fd_desc + 1] = s
    elseif ttype == T.CRED_PID then u32(F.cred_pid, "cred_pid")
    elseif ttype == T.CRED_UID then u32(F.cred_uid, "cred_uid")
    elseif ttype == T.CRED_GID then u32(F.cred_gid, "cred_gid")
    elseif ttype == T.CTRUNC then
        local n = vr:uint()
        ti:add(F.ctrunc, vr)
        ti:append_text(n ~= 0 and ": yes" or ": no")
        v.ctrunc = v.ctrunc or n ~= 0
    elseif ttype == T.CLIENT_ADDR then str(F.client_addr, "client_addr")
    elseif ttype == T.CLIENT_GROUPS then
        local list = {}
        for i = 0, tlen - 4, 4 do
            local g = tvb(off + 4 + i, 4)
            ti:add(F.groups, g)
            list[#list + 1] = g:uint()
        end
        ti:append_text(": " .. (#list > 0 and table.concat(list, ", ") or "none"))
        v.groups = list
    elseif ttype == T.VERSION then str(F.udsdump_version, "udsdump_version")
    elseif ttype == T.SENDER_PID then u32(F.sender_pid, "sender_pid")
    elseif ttype == T.SENDER_UID then u32(F.sender_uid, "sender_uid")
    elseif ttype == T.SENDER_GID then u32(F.sender_gid, "sender_gid")
    elseif ttype == T.SENDER_COMM then str(F.sender_comm, "sender_comm")
    elseif ttype == T.SOURCE then str(F.source, "source")
    elseif ttype == T.CAPTURE_START then
        local ns = vr:uint64()
        local t = NSTime((ns / 1000000000):tonumber(), (ns % 1000000000):tonumber())
        ti:add(F.capture_start, vr, t)
        ti:append_text(": " .. tostring(ns) .. " ns")
    else
        -- unknown types are skipped, as the format requires of readers
        if tlen > 0 then ti:add(F.tlv_value, vr) end
    end
    return true
end

local function record_open(pinfo, key, conn_id, v)
    local c = {
        conn = conn_id, open_frame = pinfo.number,
        path = v.path, type = v.type, pid = v.pid, uid = v.uid, gid = v.gid, groups = v.groups,
        comm = v.comm, client_addr = v.client_addr, server_pid = v.server_pid,
        server_comm = v.server_comm, proto = v.proto,
    }
    local list = conns[key]
    if not list then
        list = {}
        conns[key] = list
    end
    list[#list + 1] = c
    return c
end

local function dissect_meta(tvb, pinfo, tree)
    local len = tvb:len()
    if len < 4 or tvb(0, 4):string() ~= "UDSD" then
        return 0    -- another user of the experimental EtherType
    end
    if not wrapped then
        ethertype_table:add(ETHERTYPE_IPV4, unix)
        wrapped = true
    end
    pinfo.cols.protocol = "UNIX"

    local root = tree:add(unix, tvb())
    root:add(F.magic, tvb(0, 4))
    if len < HEADER_LEN then
        root:add_proto_expert_info(E.malformed, "metadata header truncated: " .. len .. " of 24 bytes")
        pinfo.cols.info = "malformed udsdump metadata"
        root:append_text(", malformed")
        return len
    end
    local version, event, dir = tvb(4, 1):uint(), tvb(5, 1):uint(), tvb(6, 1):uint()
    local conn_id = tvb(8, 4):uint()
    root:add(F.version, tvb(4, 1))
    root:add(F.event, tvb(5, 1))
    root:add(F.dir, tvb(6, 1))
    root:add(F.flags, tvb(7, 1))
    if event ~= EV_INFO then
        root:add(F.conn, tvb(8, 4))
    end
    root:add(F.client_ip, tvb(12, 4))
    root:add(F.server_ip, tvb(16, 4))
    root:add(F.client_port, tvb(20, 2))
    root:add(F.server_port, tvb(22, 2))
    if version ~= FORMAT_VERSION then
        root:add_proto_expert_info(E.version, "metadata format version " .. version .. ", this dissector knows "
            .. FORMAT_VERSION)
        pinfo.cols.info = "udsdump metadata, unknown version " .. version
        return len
    end

    local v = { fd_desc = {} }
    local off, bad = HEADER_LEN, false
    while off < len do
        if len - off < 4 then
            root:add_proto_expert_info(E.malformed, (len - off) .. " stray bytes after the last TLV")
            bad = true
            break
        end
        local ttype, tlen = tvb(off, 2):uint(), tvb(off + 2, 2):uint()
        if off + 4 + tlen > len then
            root:add(F.tlv, tvb(off, len - off)):set_text(TLV_NAMES[ttype] or ("Unknown TLV " .. ttype))
            root:add_proto_expert_info(E.malformed, string.format("TLV %d: length %d runs past the frame", ttype,
                tlen))
            bad = true
            break
        end
        if not dissect_tlv(tvb, pinfo, root, off, ttype, tlen, v) then
            bad = true
        end
        off = off + 4 + tlen
    end

    local key = tuple_key(tvb(12, 4):uint(), tvb(20, 2):uint(), tvb(16, 4):uint(), tvb(22, 2):uint())
    local c
    if event == EV_OPEN then
        if not pinfo.visited then
            record_open(pinfo, key, conn_id, v)
        end
        c = find_conn(key, pinfo.number)
    elseif event ~= EV_INFO then
        c = find_conn(key, pinfo.number)
        if c and not pinfo.visited and event == EV_CLOSE then
            c.close_frame = pinfo.number
        end
    end

    if dir == DIR_C2S or dir == DIR_S2C then
        gen(root, F.direction, DIR_NAMES[dir])
    end
    if c and event ~= EV_OPEN then
        local st = root:add(unix, tvb(8, 16), "Endpoints: " .. client_label(c) .. " -> " .. server_label(c))
        add_conn_labels(st, c, false)
    end

    local info
    local who = c and (client_label(c) .. " -> " .. server_label(c)) or ("connection " .. conn_id)
    if event == EV_OPEN then
        info = "open " .. who
    elseif event == EV_CLOSE then
        info = "close " .. who
    elseif event == EV_DROP then
        local n = v.dropped and tostring(v.dropped) or "?"
        info = "dropped " .. n .. " bytes"
        if DIR_NAMES[dir] and dir ~= DIR_NONE then
            info = info .. " " .. DIR_NAMES[dir]
        end
        root:add_proto_expert_info(E.dropped, "capture data lost: " .. n .. " bytes not captured")
    elseif event == EV_ANCILLARY then
        local a = {
            frame = pinfo.number, fds = v.fds, fd_desc = v.fd_desc, cred_pid = v.cred_pid,
            cred_uid = v.cred_uid, cred_gid = v.cred_gid, ctrunc = v.ctrunc,
        }
        if not a.fds and #a.fd_desc > 0 then
            a.fds = #a.fd_desc
        end
        a.summary = ancillary_summary(a)
        info = a.summary
        if a.fds then
            root:add_proto_expert_info(E.fds, a.fds .. " file descriptor(s) passed: "
                .. (#a.fd_desc > 0 and table.concat(a.fd_desc, ", ") or "(not described)"))
        end
        if a.cred_pid or a.cred_uid or a.cred_gid then
            root:add_proto_expert_info(E.creds, "SCM_CREDENTIALS passed: pid " .. tostring(a.cred_pid or "?")
                .. ", uid " .. tostring(a.cred_uid or "?") .. ", gid " .. tostring(a.cred_gid or "?"))
        end
        if a.ctrunc then
            root:add_proto_expert_info(E.ctrunc)
        end
        if c and not pinfo.visited and (dir == DIR_C2S or dir == DIR_S2C) then
            pending_anc[c] = pending_anc[c] or {}
            pending_anc[c][dir] = a
        end
    elseif event == EV_SENDER then
        local snd = { pid = v.sender_pid, uid = v.sender_uid, gid = v.sender_gid, comm = v.sender_comm }
        -- pid 0: a process udsdump cannot name (outside its pid namespace): its name only
        snd.label = (snd.comm or "?") .. ((snd.pid or 0) > 0 and ("[" .. snd.pid .. "]") or "")
        info = "sent by " .. snd.label .. " " .. (DIR_NAMES[dir] or "")
        if c and not pinfo.visited and (dir == DIR_C2S or dir == DIR_S2C) then
            cur_sender[c] = cur_sender[c] or {}
            cur_sender[c][dir] = snd
        end
    elseif event == EV_INFO then
        info = "udsdump " .. (v.udsdump_version or "?") .. " capture of " .. (v.path or "?")
        if v.source then
            info = info .. " (" .. v.source .. ")"
        end
    else
        info = "udsdump metadata event " .. event
    end
    if bad then
        info = info .. " [malformed]"
    end
    pinfo.cols.info = info
    root:append_text(", " .. info)
    if c then
        set_endpoint_columns(pinfo, c, dir, pinfo.net_src)
    elseif event == EV_INFO and v.path then
        set_endpoint_columns(pinfo, { conn = 0, comm = "udsdump", path = v.path }, DIR_C2S, pinfo.net_src)
    end
    return len
end

---------------------------------------------------------------------------------------------------
-- Traffic frames (the IPv4 wrapper)

-- The 4-tuple of a frame as udsdump writes it (IPv4 after Ethernet, then TCP, UDP, or UDP-Lite for a
-- datagram too big for UDP), read from the bytes of the IPv4 packet: other dissectors' fields exist
-- only when a tree is built, which a first pass (tshark -2, tshark -r without a filter) does not do.
-- Also whether the frame starts a message's bytes (carries_data: TCP payload, or the first frame of a
-- datagram), for ancillary data.  nil when the packet is not of that shape.
local IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE = 6, 17, 136
local sbyte, floor = string.byte, math.floor

local function frame_tuple(tvb)
    local len = tvb:len()
    if len < 20 then
        return nil
    end
    -- one string of the headers (IPv4 with options, the start of TCP/UDP), then plain arithmetic: a
    -- TvbRange per field would cost more than the rest of the labelling
    local h = tvb:raw(0, len < 76 and len or 76)
    local b = function(off) return sbyte(h, off + 1) end     -- byte at a 0-based offset
    local vihl = b(0)
    local ihl = (vihl % 16) * 4
    if floor(vihl / 16) ~= 4 or ihl < 20 then
        return nil
    end
    local proto = b(9)
    if proto ~= IPPROTO_TCP and proto ~= IPPROTO_UDP and proto ~= IPPROTO_UDPLITE then
        return nil
    end
    local frag = b(6) * 256 + b(7)
    local a1, a2, a3, a4, d1, d2, d3, d4 = sbyte(h, 13, 20)
    local t = {
        src = ((a1 * 256 + a2) * 256 + a3) * 256 + a4, dst = ((d1 * 256 + d2) * 256 + d3) * 256 + d4,
        ip_id = b(4) * 256 + b(5), more_frags = floor(frag / 0x2000) % 2 == 1, frag_off = frag % 0x2000,
    }
    local th = ihl
    if t.frag_off == 0 then
        if #h < th + (proto == IPPROTO_TCP and 13 or 4) then
            return nil
        end
        t.sport, t.dport = b(th) * 256 + b(th + 1), b(th + 2) * 256 + b(th + 3)
        if proto == IPPROTO_TCP then
            t.carries_data = b(2) * 256 + b(3) - ihl - floor(b(th + 12) / 16) * 4 > 0
        else
            t.carries_data = true   -- a datagram, even an empty one, is a message
        end
    end
    return t
end

local function label_traffic(tvb, pinfo, tree, none_addr)
    local t = frame_tuple(tvb)
    if not t then
        return
    end
    local number = pinfo.number
    local key, rkey
    local fkey = t.src .. ">" .. t.dst .. "/" .. t.ip_id
    if t.sport then
        key = tuple_key(t.src, t.sport, t.dst, t.dport)
        rkey = tuple_key(t.dst, t.dport, t.src, t.sport)
        if t.more_frags and not pinfo.visited then
            frag_key[fkey] = { key, rkey }      -- the rest of this datagram carries no UDP header
        end
    elseif frag_key[fkey] then
        key, rkey = frag_key[fkey][1], frag_key[fkey][2]
    else
        return
    end

    local c, dir = find_conn(key, number), DIR_C2S
    if not c then
        c, dir = find_conn(rkey, number), DIR_S2C
    end
    if not c then
        return
    end

    -- descriptors and credentials travel with the first bytes sent after their ANCILLARY frame
    if not pinfo.visited and t.carries_data then
        local p = pending_anc[c]
        if p and p[dir] then
            frame_anc[number] = p[dir]
            p[dir] = nil
        end
    end

    -- observe mode: each chunk's sender, from the latest SENDER frame of its direction
    if not pinfo.visited and t.carries_data then
        local s = cur_sender[c]
        if s and s[dir] then
            frame_sender[number] = s[dir]
        end
    end

    local title = c.titles
    if not title then
        title = { [DIR_C2S] = "Unix Domain Socket, " .. client_label(c) .. " -> " .. server_label(c),
                  [DIR_S2C] = "Unix Domain Socket, " .. server_label(c) .. " -> " .. client_label(c) }
        c.titles = title
    end
    local root = tree:add(unix, tvb(0, 0), title[dir])
    gen(root, F.direction, DIR_NAMES[dir])
    add_conn_labels(root, c, true)
    local a = frame_anc[number]
    if a then
        add_ancillary_labels(root, a)
    end
    local snd = frame_sender[number]
    if snd then
        root:append_text(", sent by " .. snd.label)
        if snd.pid then gen(root, F.sender_pid, snd.pid) end
        if snd.uid then gen(root, F.sender_uid, snd.uid) end
        if snd.gid then gen(root, F.sender_gid, snd.gid) end
        if snd.comm then gen(root, F.sender_comm, snd.comm) end
    end
    set_endpoint_columns(pinfo, c, dir, none_addr)
end

function unix.dissector(tvb, pinfo, tree)
    if pinfo.match_uint ~= ETHERTYPE_IPV4 then
        return dissect_meta(tvb, pinfo, tree)
    end
    local none_addr = pinfo.net_src     -- still NONE: IPv4 has not run yet
    local taken = ipv4:call(tvb, pinfo, tree)
    label_traffic(tvb, pinfo, tree, none_addr)
    return taken
end

ethertype_table:add(ETHERTYPE_UDSD, unix)
